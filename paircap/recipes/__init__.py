"""End-to-end recipes: `python -m paircap.recipes.mini` trains and evaluates the whole pipeline on real ESC-50 audio."""
