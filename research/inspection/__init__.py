"""Looking inside a trained run: predictions on the user's own images (predict.py), layer
activations, weight statistics, saliency and one HTML page (inspector.py, page.py)."""
