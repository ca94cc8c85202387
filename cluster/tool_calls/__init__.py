"""Tool calls as model families write them: the grammars that force them, and the parsers that
split an output (whole or streamed) into content and calls. base.py says what a format is."""
