"""xentlab: which output activation and loss for this classification problem, measured."""
