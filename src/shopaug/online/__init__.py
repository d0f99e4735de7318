"""shopaug.online: feedback becomes samples, a challenger is fine-tuned, gated and promoted.

It reads the feedback store (:mod:`shopaug.feedback`), ranks with :mod:`shopaug.retrieval`,
loads models with :mod:`shopaug.models` and never imports :mod:`shopaug.serve`: a running
service is told to reload over HTTP.
"""
