"""Model plumbing shared by record and analysis: structure discovery, head gates, loading.

Not a stage of the data flow: every stage that touches a model may import it.
"""
