"""One module per page, each with `render(...)`; app.py lists them."""
