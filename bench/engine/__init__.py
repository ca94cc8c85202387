"""Engine benchmark: Triserve's Engine against transformers' generate (`python -m bench.engine`).

benchmark.py   flags, the workloads run side by side, the results (main)
workloads.py   seeded prompts, images and batches; the timings each system returns
triserve.py    Triserve's side: one colocated Engine, driven step by step
hf.py          transformers' side: LlavaForConditionalGeneration.generate
membw.py       the memory-bandwidth floor of a decode step
report.py      the markdown tables
"""
