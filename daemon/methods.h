/* Method tables of io.sessiond.Session and io.sessiond.Admin.
 * methods_dispatch() (declared in server.h) is the entry point. */
#pragma once
