"""Domain adaptation (`workbench adapt`): masked-LM pretraining on the user's texts (adapt.py) and the
catalog of adapted backbones (adapted.py)."""
