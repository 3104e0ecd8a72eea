"""End-to-end recipes: `paircap mini` trains and evaluates the whole pipeline on real ESC-50 audio."""
