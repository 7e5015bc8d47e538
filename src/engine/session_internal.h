/* engine/session_internal.h: what strata's own code and tests may see of a session.
 *
 * The session struct stays private to engine/session.c; this header hands
 * out its parts for code inside strata that needs them (tests that read a
 * session's KV blocks, for instance), never through the public API. */
#ifndef STRATA_ENGINE_SESSION_INTERNAL_H
#define STRATA_ENGINE_SESSION_INTERNAL_H

#include "kv/seq.h"
#include "strata.h"

/* Returns the session's sequence view of the KV pool (owned by the session). */
kv_seq *session_kv_seq(strata_session *session);

#endif
