"""The wire: event envelope, topic catalog and frozen event models shared by every service.

Everything another process can see of Rekisteri is defined here once: topic names and their
settings (`contracts.topics`), who may read and write them (`contracts.principals`), and the
shape of every event (`contracts.envelope` and one module per producing service).
"""
