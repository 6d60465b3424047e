"""Core of the runtime: the collection model, storage, records, rules, events."""
