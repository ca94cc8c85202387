"""The Triserve engine: one LLaVA-family model on one device, with separate encode, prefill and
decode stages. Start at `engine.py`."""
