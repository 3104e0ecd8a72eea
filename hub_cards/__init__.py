"""Model and dataset card templates, filled at publish time (see `paircap.cards`)."""
