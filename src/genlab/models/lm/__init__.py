"""Neural language models: recurrent (RNN, LSTM, GRU) and the decoder-only Transformer."""
