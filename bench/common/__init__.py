"""What the benchmarks share:

cluster.py   a private local Ray, starting a cluster and stopping it until its names are free
machine.py   the machine a run measured, stored next to its numbers
output.py    progress lines on stderr, a markdown table row, the JSON results file
stats.py     the mean and percentiles of a list of samples
words.py     the vocabulary of synthetic prompts
"""
