"""HTTP: the Handinger wire format in and out. No SQL, no rules."""
