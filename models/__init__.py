"""The classifier interface, bundled default models and weight loading."""
