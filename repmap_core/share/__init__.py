"""What leaves the app: figures (plotly, no streamlit), exports (HTML, PNG, CSV, arrays), session
bundles and the HTML report.
"""
