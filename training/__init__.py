"""The attention seq2seq model, its decoding, and its data-parallel training on Ray."""
