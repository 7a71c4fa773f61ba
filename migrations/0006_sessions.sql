-- Session revocation. Session cookies are signed, not stored; each carries
-- its role's generation from when it was made, and a cookie of an older
-- generation is refused. Logging out bumps the admin generation (ending
-- every admin session, copies of the cookie included); "log out
-- everywhere" bumps both.
CREATE TABLE session_generations (
  role        TEXT    PRIMARY KEY,   -- "a" admin sessions, "g" guest sessions
  generation  INTEGER NOT NULL
);
INSERT INTO session_generations (role, generation) VALUES ('a', 1), ('g', 1);
