// netplug_common.h: what the network plugins' integration tests share: the first action of a
// reply (or its status), and a Postfix request from a given client address (and instance).
#ifndef ITEST_NETPLUG_COMMON_H
#define ITEST_NETPLUG_COMMON_H

#include "harness.h"

#include <string>
#include <utility>
#include <vector>

namespace itest
{

inline std::string first(const Reply &r)
{
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

inline Reply send_from(uint16_t port, const std::string &ip, const std::string &instance = "")
{
    std::vector<std::pair<std::string, std::string>> o = {{"client_address", ip}};
    if (!instance.empty())
        o.push_back({"instance", instance});
    return ask(Endpoint::tcp(port), postfix_request(o));
}

} // namespace itest

#endif
