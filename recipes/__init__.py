"""Recipes: whole runs of the toolkit, each in one folder as ESPnet keeps them (`run.py`, the stages; `conf/`, their
settings; `local/`, what only this recipe needs; `RESULTS.md`). Above the toolkit: nothing in `paircap`,
`datasets_scripts`, `hub_cards` or `modeling_paircap` imports them."""
