"""`seedbed demo load`: a synthetic city anchor network, loaded through the public API."""
