"""The demo app that plays the stable and canary revisions in tests and demos: an HTTP
service with a configurable error rate and latency (:mod:`demoapp.app`, run with
``python -m demoapp``) and a bounded load generator (:mod:`demoapp.load`).
"""
