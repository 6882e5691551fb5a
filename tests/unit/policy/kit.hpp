// kit.hpp: helpers shared by the policy core's unit tests: a testkit owner, configuration
// builders and a log capture (the engine's log written to a temporary file).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>

extern "C" {
#include "eng/log.h"
#include "probe.h"
#include "testkit.h"
}

struct Kit {
    pol_testkit *k = nullptr;
    std::string err;
    explicit Kit(const std::string &conf)
    {
        probe_register();
        char e[2048] = "";
        k = pol_testkit_new(conf.c_str(), e, sizeof e);
        err = e;
    }
    ~Kit()
    {
        pol_testkit_free(k);
    }
    Kit(const Kit &) = delete;
    Kit &operator=(const Kit &) = delete;
    // The reply, or "ERR " and the error text.
    std::string ask(const std::string &req, const char *port = "12345")
    {
        char buf[16384];
        int rc = pol_testkit_request(k, port, req.c_str(), buf, sizeof buf);
        return rc == 0 ? std::string(buf) : "ERR " + std::string(buf);
    }
    std::string line() const
    {
        return pol_testkit_last_result_line(k);
    }
    std::string session(const char *instance, const char *key)
    {
        const char *v = pol_testkit_session_get(k, instance, key);
        return v ? v : "<none>";
    }
};

// One virtual host on port 12345 named "test" with these plugin blocks; globals first.
inline std::string vhost(const std::string &plugins, const std::string &globals = "")
{
    return globals + "<VirtualHost 12345>\nname = test\n" + plugins + "</VirtualHost>\n";
}

inline std::string probe(const std::string &name, const std::string &opts)
{
    return "<Plugin " + name + ">\nmodule = Probe\n" + opts + "\n</Plugin>\n";
}

inline std::string memory_cache()
{
    return "<SessionCache>\nmodule = Memory\n</SessionCache>\n";
}

inline const char *req(const char *instance = "i1")
{
    static std::string s;
    s = std::string("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\n"
                    "instance=") +
        instance + "\n";
    return s.c_str();
}

// Sends the engine's log to a temporary file while alive; text() reads it.
struct LogCapture {
    std::string path;
    explicit LogCapture(int level = 4)
    {
        char tmpl[] = "/tmp/polcore-log-XXXXXX";
        int fd = mkstemp(tmpl);
        if (fd >= 0)
            close(fd);
        path = tmpl;
        eng_log_config cfg{};
        cfg.level = level;
        cfg.target = ENG_LOG_FILE;
        cfg.path = path.c_str();
        char err[256];
        eng_log_open(&cfg, err, sizeof err);
    }
    ~LogCapture()
    {
        eng_log_close();
        eng_log_config cfg{};
        cfg.level = 2;
        cfg.target = ENG_LOG_STDERR;
        char err[256];
        eng_log_open(&cfg, err, sizeof err);
        unlink(path.c_str());
    }
    std::string text() const
    {
        eng_log_flush();
        std::ifstream f(path);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    }
};
