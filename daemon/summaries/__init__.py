"""Meeting summaries from an OpenAI-compatible server (issue #30): what is asked
(`prompt.py`: instructions, numbered transcript lines, parts that fit the context),
what comes back (`answer.py`: the summary object, or the answer's text), the map-reduce
over parts (`mapreduce.py`) and the HTTP call (`client.py`, loaded only by workers).

Nothing here knows the database or the outbox: daemon/jobs/summarize.py runs a summary
task and daemon/jobs/results.py publishes what it made.
"""
