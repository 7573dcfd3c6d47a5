"""Reporting: the text and HTML reports, the evidence bundle, what is kept with a run, redaction."""
