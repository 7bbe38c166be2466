"""TrainDeck's Gradio console: one module per tab; handlers call the engine and own no state."""
