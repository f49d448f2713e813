/* The version of the SQLite schema this build writes and reads (PRAGMA
 * user_version): shared by the SQLite backend and `sessionctl db`, which
 * refuses a database newer than it knows. */
#pragma once

#define STORE_SCHEMA_VERSION 1
