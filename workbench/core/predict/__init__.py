"""Using a trained model: batch prediction of files and folders (``batch``), the loaded export that
answers (``predictor``) and the readers of new data (``inputs``). The server (workbench/cli/serve.py) and
the app's Predict section use the same objects."""
