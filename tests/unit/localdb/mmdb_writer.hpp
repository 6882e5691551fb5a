// mmdb_writer.hpp: a small MaxMind DB (.mmdb, format 2.0) writer for the GeoIP tests: networks
// with a country code each ({"country": {"iso_code": CC}}, or "registered_country" instead),
// 24-bit records, an IPv6 tree (IPv4 networks under ::/96, as MaxMind's own IPv6 databases
// keep them) or an IPv4 tree. Written from the format's specification; libmaxminddb reads the
// result (the tests check every answer through it). Header-only, C++17. Networks must not
// overlap (the writer does not split records).
#ifndef MMDB_WRITER_HPP
#define MMDB_WRITER_HPP

#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ldbtest
{

class MmdbWriter
{
  public:
    explicit MmdbWriter(int ip_version) : ip_version_(ip_version)
    {
        nodes_.push_back({EMPTY, EMPTY});
    }

    // Adds "ADDR/LEN" (IPv4 or IPv6 text) with country code cc; under "registered_country"
    // instead of "country" when registered is set.
    void add(const std::string &cidr, const std::string &cc, bool registered = false)
    {
        size_t slash = cidr.find('/');
        std::string addr = cidr.substr(0, slash);
        int len = std::stoi(cidr.substr(slash + 1));
        unsigned char bytes[16] = {};
        int bits = 0;
        if (addr.find(':') != std::string::npos) {
            if (ip_version_ != 6 || inet_pton(AF_INET6, addr.c_str(), bytes) != 1)
                throw std::runtime_error("bad IPv6 network " + cidr);
            bits = len;
        } else if (ip_version_ == 6) {
            if (inet_pton(AF_INET, addr.c_str(), bytes + 12) != 1)
                throw std::runtime_error("bad IPv4 network " + cidr);
            bits = 96 + len;
        } else {
            if (inet_pton(AF_INET, addr.c_str(), bytes) != 1)
                throw std::runtime_error("bad IPv4 network " + cidr);
            bits = len;
        }
        uint64_t data = DATA | data_for(cc, registered);
        size_t node = 0;
        for (int i = 0; i < bits; i++) {
            int bit = bytes[i / 8] >> (7 - i % 8) & 1;
            if (i == bits - 1) {
                nodes_[node][bit] = data;
                break;
            }
            if (nodes_[node][bit] == EMPTY) {
                nodes_.push_back({EMPTY, EMPTY}); // may move nodes_: index again below
                nodes_[node][bit] = NODE | (nodes_.size() - 1);
            }
            if ((nodes_[node][bit] & KIND_MASK) != NODE)
                throw std::runtime_error("overlapping network " + cidr);
            node = nodes_[node][bit] & ~KIND_MASK;
        }
    }

    // The file's bytes.
    std::string bytes() const
    {
        uint64_t count = nodes_.size();
        std::string out;
        auto rec = [&](uint64_t r) {
            uint64_t v = r == EMPTY                ? count
                         : (r & KIND_MASK) == NODE ? (r & ~KIND_MASK)
                                                   : count + 16 + (r & ~KIND_MASK);
            if (v >= (1u << 24))
                throw std::runtime_error("record over 24 bits");
            out += static_cast<char>(v >> 16);
            out += static_cast<char>(v >> 8);
            out += static_cast<char>(v);
        };
        for (auto &n : nodes_) {
            rec(n[0]);
            rec(n[1]);
        }
        out += std::string(16, '\0');
        out += data_;
        out += std::string("\xab\xcd\xefMaxMind.com");
        std::string meta;
        meta += ctrl(7, 9); // map of 9 pairs
        meta += str("binary_format_major_version") + uint(5, 2);
        meta += str("binary_format_minor_version") + uint(5, 0);
        meta += str("build_epoch") + uint(9, 1700000000);
        meta += str("database_type") + str("Test-Country");
        meta += str("description") + ctrl(7, 1) + str("en") + str("ringpolicyd test database");
        meta += str("ip_version") + uint(5, static_cast<uint64_t>(ip_version_));
        meta += str("languages") + ctrl(11, 1) + str("en");
        meta += str("node_count") + uint(6, count);
        meta += str("record_size") + uint(5, 24);
        return out + meta;
    }

    void write(const std::string &path) const
    {
        std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes();
    }

  private:
    static constexpr uint64_t KIND_MASK = 3ull << 62;
    static constexpr uint64_t NODE = 1ull << 62;
    static constexpr uint64_t DATA = 2ull << 62;
    static constexpr uint64_t EMPTY = 3ull << 62;

    // A control byte (and the extended type byte) for type and size < 29.
    static std::string ctrl(int type, size_t size)
    {
        if (size >= 29)
            throw std::runtime_error("size over 28");
        std::string s;
        if (type <= 7) {
            s += static_cast<char>(type << 5 | static_cast<int>(size));
        } else {
            s += static_cast<char>(static_cast<int>(size));
            s += static_cast<char>(type - 7);
        }
        return s;
    }
    static std::string str(const std::string &v)
    {
        return ctrl(2, v.size()) + v;
    }
    static std::string uint(int type, uint64_t v)
    {
        std::string be;
        for (; v != 0; v >>= 8)
            be.insert(be.begin(), static_cast<char>(v & 0xff));
        return ctrl(type, be.size()) + be;
    }
    uint64_t data_for(const std::string &cc, bool registered)
    {
        uint64_t off = data_.size();
        data_ += ctrl(7, 1) + str(registered ? "registered_country" : "country") + ctrl(7, 1) +
                 str("iso_code") + str(cc);
        return off;
    }

    int ip_version_;
    std::vector<std::array<uint64_t, 2>> nodes_;
    std::string data_;
};

} // namespace ldbtest

#endif
