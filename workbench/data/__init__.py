"""Stage 1: a corpus becomes the prepared pretraining dataset (tokenizer, pairs, packing, masking)."""

__all__: list[str] = []
