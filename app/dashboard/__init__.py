"""`observatory dashboard`: a Streamlit app over the store, read-only.

main.py is the Streamlit script (navigation, sidebar); page_scripts/ holds one small module per page;
data.py the cached readers (keyed by the store path; Refresh clears them); charts.py the
Plotly Express figures; sandbox.py the SQL box's locked-down DuckDB connection; command.py the
`dashboard` subcommand that starts Streamlit.
"""
