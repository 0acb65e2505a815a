"""How candidates are found, trained, compared, reported, exported."""
