// plugin_kit.hpp: what the plugin tests share: a configuration with one virtual host around
// the plugin blocks under test, and a small RAII wrapper over policy/testkit.h that sends
// requests and returns the encoded replies. Header-only, C++17, used by every
// tests/unit/plugins/*_test.cpp.
#ifndef PLUGIN_KIT_HPP
#define PLUGIN_KIT_HPP

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>

extern "C" {
#include "eng/log.h"
#include "pol/plugin.h"
#include "server.h"
#include "testkit.h"
}

namespace plugkit
{

// The port every test configuration's virtual host answers on.
inline const char *const port = "12345";

// A configuration: an optional Memory session cache, then <VirtualHost 12345> named "test"
// holding the given plugin blocks (their lines start at line 4 or 7 of test.conf).
inline std::string conf(const std::string &plugins, bool memory_sessions = false)
{
    std::string c;
    if (memory_sessions)
        c += "<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n";
    c += "<VirtualHost 12345>\n  name = test\n" + plugins + "</VirtualHost>\n";
    return c;
}

// One <Plugin NAME> block (options are full lines, indented by four).
inline std::string plugin(const std::string &name, const std::string &module,
                          const std::string &options = "")
{
    return "  <Plugin " + name + ">\n    module = \"" + module + "\"\n" + options + "  </Plugin>\n";
}

// A SetField block named set-KEY.
inline std::string set_field(const std::string &key, const std::string &value)
{
    return plugin("set-" + key, "SetField",
                  "    key = \"" + key + "\"\n    value = \"" + value + "\"\n");
}

// An Action block.
inline std::string action(const std::string &name, const std::string &text)
{
    return plugin(name, "Action", "    action = \"" + text + "\"\n");
}

// A Condition that matches every request carrying client_address and adds score.
inline std::string scorer(const std::string &name, const std::string &score)
{
    return plugin(name, "Condition",
                  "    key = \"client_address\"\n    invert = 1\n    score = " + score + "\n");
}

// A request from Postfix-like attributes given as "name=value\n" lines.
inline std::string req(const std::string &attrs)
{
    return "request=smtpd_access_policy\nprotocol_state=RCPT\n" + attrs;
}

class Kit
{
  public:
    explicit Kit(const std::string &config)
    {
        char err[1024] = "";
        kit_ = pol_testkit_new(config.c_str(), err, sizeof err);
        error_ = err;
    }
    ~Kit()
    {
        if (kit_ != nullptr)
            pol_testkit_free(kit_);
    }
    Kit(const Kit &) = delete;
    Kit &operator=(const Kit &) = delete;

    bool ok() const
    {
        return kit_ != nullptr;
    }
    const std::string &error() const
    {
        return error_;
    }

    // The encoded reply ("action=...\n\n"), or "FAILED: " and the error the daemon would log.
    std::string ask(const std::string &request)
    {
        if (kit_ == nullptr)
            return "NO KIT: " + error_;
        char reply[16384] = "";
        int rc = pol_testkit_request(kit_, port, request.c_str(), reply, sizeof reply);
        return rc == 0 ? std::string(reply) : "FAILED: " + std::string(reply);
    }

    // A session value of the Memory cache; "<absent>" when there is none.
    std::string session(const std::string &instance, const std::string &key)
    {
        const char *v = pol_testkit_session_get(kit_, instance.c_str(), key.c_str());
        return v != nullptr ? std::string(v) : std::string("<absent>");
    }

    std::string result_line() const
    {
        const char *line = pol_testkit_last_result_line(kit_);
        return line != nullptr ? std::string(line) : std::string();
    }

  private:
    struct pol_testkit *kit_ = nullptr;
    std::string error_;
};

// A test-only plugin type `TwoResults`: two results that do not abort ("first", "second"), as
// a plugin returning several results would give them. Registered once per process.
inline enum pol_step two_results_step(struct pol_plugin *, struct pol_req *r, void *)
{
    if (pol_result(r, "first", 5, false) != 0 || pol_result(r, "second", 6, false) != 0)
        return pol_req_fail(r, "out of memory");
    return POL_NEXT;
}

inline void register_two_results()
{
    static const struct pol_plugin_type type = [] {
        struct pol_plugin_type t = {};
        t.api_version = POL_PLUGIN_API_VERSION;
        t.module = "TwoResults";
        t.step = two_results_step;
        return t;
    }();
    static const int rc = pol_server_register_type(&type);
    (void)rc;
}

// Sends the log (at `level`) to a temporary file while it lives, for checking plugin messages.
// The testkit runs on this thread, which is not a shard, so every line is written at once.
class LogCapture
{
  public:
    explicit LogCapture(int level = ENG_LOG_DEBUG)
    {
        char name[] = "/tmp/plugins_log.XXXXXX";
        int fd = mkstemp(name);
        if (fd >= 0)
            close(fd);
        path_ = name;
        struct eng_log_config cfg = {};
        cfg.level = level;
        cfg.target = ENG_LOG_FILE;
        cfg.path = path_.c_str();
        char err[256];
        ok_ = fd >= 0 && eng_log_open(&cfg, err, sizeof err) == 0;
    }
    ~LogCapture()
    {
        eng_log_close();
        std::remove(path_.c_str());
    }
    LogCapture(const LogCapture &) = delete;
    LogCapture &operator=(const LogCapture &) = delete;

    bool ok() const
    {
        return ok_;
    }
    std::string text() const
    {
        std::ifstream in(path_, std::ios::binary);
        std::ostringstream s;
        s << in.rdbuf();
        return s.str();
    }
    bool has_line(const std::string &line) const
    {
        return ("\n" + text()).find("\n" + line + "\n") != std::string::npos;
    }

  private:
    std::string path_;
    bool ok_ = false;
};

// The reply Postfix would receive for one action.
inline std::string reply(const std::string &action)
{
    return "action=" + action + "\n\n";
}

inline const std::string dunno = "action=dunno\n\n";

} // namespace plugkit

#endif
