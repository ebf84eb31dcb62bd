#include "peer/peer.h"

namespace hotshard::peer {

std::string objectKey(const ObjectRequest& request) {
  std::string key;
  key.reserve(request.ns.size() + 1 + request.relpath.size());
  key.append(request.ns);
  key.push_back('\0');
  key.append(request.relpath);
  return key;
}

}  // namespace hotshard::peer
