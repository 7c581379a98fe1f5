"""The batch runner: ``procpool run`` and ``procpool status``, a user of the library.

Owns running a batch of items (JSON Lines, CSV, a glob or folder of files, or stdin) through a
``Pool``, with a resumable SQLite journal that writes each finished item to the results file
exactly once, and the command line around it:

    cli.py       the ``procpool`` command: arguments, messages, exit statuses (``main``)
    runner.py    one ``procpool run``: ``RunSpec``, ``run_batch``, the journal check, feeding
                 the pool what is not recorded, recording each outcome
    inputs.py    reading the input into numbered, fingerprinted records
    item.py      what a worker runs per item: the call, its timing, its JSON
    journal.py   the SQLite journal: schema, checks, lock, the exactly-once write protocol

Must not reach into the engine's private state: it is not a second engine. It uses the
``Pool``'s public face plus ``Pool._imap_outcomes`` (an ``Outcome`` per item, so that a failed
item is journaled by its index), ``procpool._streams.Outcome``, ``procpool._progress``'s
tracker, ``procpool._engine.name_of`` and the public errors, nothing else of the engine.

Imports nothing itself: workers import ``item.py``, and this package with it.
"""
