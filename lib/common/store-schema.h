/* The version of the session store's schema (PRAGMA user_version of a
 * sessiond database).
 *
 * Shared by the daemon's store, which creates and migrates databases up to
 * this version and refuses newer ones, and `sessionctl db check`, which
 * tells whether sessiond would accept a file. Internal: never installed. */
#pragma once

#define STORE_SCHEMA_VERSION 1
