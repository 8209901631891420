-- The probe (tests only): notes taken, tallies the consumer keeps, and words whose notes fail
-- to apply (so a test can park an event, unblock the word, and replay it).
CREATE TABLE notes (
    event_id TEXT PRIMARY KEY,
    text TEXT NOT NULL
);

CREATE TABLE tallies (
    text TEXT PRIMARY KEY,
    count BIGINT NOT NULL
);

CREATE TABLE blocked_words (
    word TEXT PRIMARY KEY
);
INSERT INTO blocked_words (word) VALUES ('poison');
