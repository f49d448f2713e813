/* The version of the session store's schema (PRAGMA user_version of a
 * sessiond database).
 *
 * Shared by the daemon's store, which creates and migrates databases up to
 * this version and refuses newer ones, and `sessionctl db check`, which
 * tells whether sessiond would accept a file. Internal: never installed. */
#pragma once

/* 1: the first schema; 2: session times to the millisecond (created_at_ms,
 * last_activity_ms, renewed_at_ms, ended_at_ms: the millisecond within the
 * second of the column of the same name). */
#define STORE_SCHEMA_VERSION 2
