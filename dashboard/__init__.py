"""Results dashboard (Streamlit) and the pure-pandas results layer (processing.py) it shares with `arena report`."""
