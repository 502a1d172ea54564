"""Results dashboard (Streamlit app); the results layer it reads through is arena.results."""
