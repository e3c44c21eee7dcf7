/* The layout of libgit2's git_stream as its own header defines it, for stream.rs's test. */
#include <stddef.h>
#include <git2.h>
#include <git2/sys/stream.h>

size_t shopset_git_stream_size(void) { return sizeof(git_stream); }
size_t shopset_git_stream_connect_offset(void) { return offsetof(git_stream, connect); }
size_t shopset_git_stream_free_offset(void) { return offsetof(git_stream, free); }
size_t shopset_git_stream_registration_size(void) { return sizeof(git_stream_registration); }
int shopset_git_stream_version(void) { return GIT_STREAM_VERSION; }
int shopset_git_stream_standard(void) { return GIT_STREAM_STANDARD; }
