// libwebsockets declares its lws_uv_* API only when <uv.h> came first.
#include <uv.h>
#include <libwebsockets.h>

// Swift does not import function-like macros, so the ones we need are wrapped.
static inline size_t pm_lws_pre(void) { return LWS_PRE; }
