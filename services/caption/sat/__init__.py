"""Show, Attend and Tell (Xu et al., 2015): an LSTM decoder with soft attention over CNN regions."""
