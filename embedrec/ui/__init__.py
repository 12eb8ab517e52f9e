"""The demo web app: `embedrec ui CONFIG` (Streamlit) over the stores a serve config names.

`app.py` is the Streamlit entry; `views/` holds one module per page (not `pages/`, which
Streamlit would take for its own multipage folder); `catalog.py`, `users.py`, `backend.py`
and `results.py` are the data access the pages share, kept free of Streamlit so that they
can be tested and reused on their own; `browser.py` and `screenshots.py` drive a headless
Chromium over the running app.
"""
