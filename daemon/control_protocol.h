// The control protocol's vocabulary, shared by the daemon's handlers
// (CacheService::addHandlers, Placement::addHandlers, the status handler) and
// the `hotshard` CLI in tools/: the command names, the fields of each request,
// and the reply of each command, so that neither side spells a key on its own.
// The framing (length-prefixed JSON, "ok"/"error", progress frames) is in
// daemon/control.h; a command name the daemon does not know gets the error reply
// "unknown command ...".
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/status.h"

namespace hotshard::control {

// ---- the envelope ----------------------------------------------------------------
inline constexpr char kCmd[] = "cmd";  // every request: {"cmd": NAME, ...fields}
inline constexpr char kOk[] = "ok";    // every reply: true, or false with "error"
inline constexpr char kError[] = "error";
inline constexpr char kProgress[] = "progress";  // a progress frame: {"progress": ...}

// ---- commands, with their request fields and replies --------------------------------

// status: no fields. Reply: StatusSnapshot (daemon/status.h), every section set.
inline constexpr char kStatus[] = "status";

// top: kTopCount, how many shards (default kTopDefaultCount). Reply: TopReply (below).
inline constexpr char kTop[] = "top";
inline constexpr char kTopCount[] = "n";
inline constexpr size_t kTopDefaultCount = 20;

// policy_show: no fields. Reply: PolicyStatus with name, spec, params, counters
// and available.
inline constexpr char kPolicyShow[] = "policy_show";
// policy_set: kSpec, "name;k=v;..." (string). Reply: PolicyStatus with name, spec,
// params and residents.
inline constexpr char kPolicySet[] = "policy_set";
inline constexpr char kSpec[] = "spec";

// trace_record: kOut, an absolute path (string); kDuration, seconds (number, in
// (0, 86400]). Reply: {"out", "records", "format": "native", "mode": "samples"|"chunks"}.
inline constexpr char kTraceRecord[] = "trace_record";
inline constexpr char kOut[] = "out";
inline constexpr char kDuration[] = "duration";
inline constexpr char kRecords[] = "records";
inline constexpr char kFormat[] = "format";  // the trace's format: "native"
inline constexpr char kMode[] = "mode";      // "chunks" (per chunk and tick) or "samples"

// The path commands take kPaths, a non-empty array of path strings (under the
// mount or the remote; directories recursively), optional for verify.
inline constexpr char kPaths[] = "paths";
// warm: progress frames, each with "done" (files finished), "total" (files),
// "bytes_done" and "bytes_total" (all files, already cached ones count as done):
// while a file is copied, every 250 ms {"path", "copied", "size"}; when a file is
// finished {"path", "ok", "size", "cached" | "error"}, "cached": true when it was
// cached already and nothing was copied. Reply {"files", "warmed" (copied now),
// "cached" (already), "bytes", "failed": [{"path", "error"}]}.
inline constexpr char kWarm[] = "warm";
// evict, pin, unpin: reply {"results": [{"path", "evicted"|"pinned", "error"?}]};
// evict of a path that is not cached: "evicted": false, "state": "remote", no error.
inline constexpr char kEvict[] = "evict";
inline constexpr char kPin[] = "pin";
inline constexpr char kUnpin[] = "unpin";
// stat: reply {"results": [{"path", "rel", "state", "pinned", "size", "object"?}]},
// one per regular file below each directory given (its path under the one given).
inline constexpr char kStat[] = "stat";
// verify: reply {"checked", "dropped", "bytes"} (all) or {"checked", "dropped",
// "results": [{"path", "error"?}]} (kPaths given).
inline constexpr char kVerify[] = "verify";

// Reply and progress fields of the path commands, as listed above.
inline constexpr char kResults[] = "results";
inline constexpr char kPath[] = "path";
inline constexpr char kRel[] = "rel";
inline constexpr char kState[] = "state";
inline constexpr char kPinned[] = "pinned";
inline constexpr char kEvicted[] = "evicted";
inline constexpr char kSize[] = "size";
inline constexpr char kObject[] = "object";
// stat of a cached file whose copy hard links of it share: how many names do.
inline constexpr char kLinks[] = "links";
// stat of a cached file whose copy cannot be served now: why (the cache disk failed).
inline constexpr char kUnusable[] = "unusable";
inline constexpr char kDone[] = "done";
inline constexpr char kTotal[] = "total";
inline constexpr char kFiles[] = "files";
inline constexpr char kWarmed[] = "warmed";
inline constexpr char kCached[] = "cached";
inline constexpr char kCopied[] = "copied";
inline constexpr char kBytesDone[] = "bytes_done";
inline constexpr char kBytesTotal[] = "bytes_total";
inline constexpr char kBytes[] = "bytes";
inline constexpr char kFailed[] = "failed";
inline constexpr char kChecked[] = "checked";
inline constexpr char kDropped[] = "dropped";

// stop: no fields. The daemon stops as on SIGTERM (unmounts, finishes, exits 0);
// reply {"pid"} before it does.
inline constexpr char kStop[] = "stop";
inline constexpr char kPid[] = "pid";

// Every command the daemon answers.
inline const std::vector<std::string_view>& commandNames() {
  static const std::vector<std::string_view> names = {kStatus,      kTop,  kPolicyShow, kPolicySet,
                                                      kTraceRecord, kWarm, kEvict,      kPin,
                                                      kUnpin,       kStat, kVerify,     kStop};
  return names;
}

// A request for cmd with no fields yet: {"cmd": cmd}.
inline json request(std::string_view cmd) { return json{{kCmd, std::string(cmd)}}; }

}  // namespace hotshard::control

namespace hotshard {

// The reply of top: the hottest shards and the placement's part of the status
// (probes, heat, jobs, policy, placement).
struct TopReply {
  std::vector<ShardRow> shards;
  StatusSnapshot status;

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("shards", s.shards);
    f("status", s.status);
  }
};

}  // namespace hotshard
