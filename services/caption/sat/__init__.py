"""The caption decoders over CNN regions and what they share (vocabulary, beam search, one
checkpoint format): Show, Attend and Tell (Xu et al., 2015: an LSTM with soft attention,
`model.py`) and a small transformer decoder (`transformer.py`, the default)."""
