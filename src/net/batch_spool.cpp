// The batch tier's durable spool. Every state change is a journal line made durable (write +
// fdatasync) before the in-memory book applies it, so a crash at any point replays to a state
// the outside world has already seen, and nothing accepted is lost.

#include "bgw/net/batch_spool.hpp"

#include "bgw/obs/log.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <fcntl.h>
#include <unistd.h>

namespace bgw::net {

batch_spool::batch_spool(const std::string& spool_dir) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(spool_dir, ec);
    if (ec) {
        throw std::runtime_error("batch.spool_dir " + spool_dir +
                                 ": cannot create: " + ec.message());
    }
    const std::string path = spool_dir + "/journal.jsonl";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd_ < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
    // Replay every complete line; a torn last line (a crash mid-write) is cut off, so the next
    // append starts on a line of its own.
    std::string text;
    char buf[65536];
    for (;;) {
        auto n = ::pread(fd_, buf, sizeof buf, static_cast<off_t>(text.size()));
        if (n < 0) throw std::runtime_error("cannot read " + path + ": " + std::strerror(errno));
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
    }
    std::size_t complete = 0, applied = 0, skipped = 0;
    for (std::size_t at = 0; at < text.size();) {
        auto nl = text.find('\n', at);
        if (nl == std::string::npos) break;
        if (book_.apply(std::string_view(text).substr(at, nl - at))) {
            ++applied;
        } else {
            ++skipped;
        }
        at = complete = nl + 1;
    }
    if (complete < text.size() && ::ftruncate(fd_, static_cast<off_t>(complete)) != 0)
        throw std::runtime_error("cannot repair " + path + ": " + std::strerror(errno));
    obs::event("batch_spool")
        .str("path", path)
        .unum("events", applied)
        .unum("skipped", skipped)
        .unum("queued", book_.queued())
        .unum("jobs", book_.jobs().size())
        .info();
}

batch_spool::~batch_spool() {
    if (fd_ >= 0) ::close(fd_);
}

bool batch_spool::append(const std::string& line) {
    // Caller holds mutex_.
    std::string out = line + "\n";
    std::size_t done = 0;
    while (done < out.size()) {
        auto n = ::write(fd_, out.data() + done, out.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            obs::event("batch_spool_write_failed").str("error", std::strerror(errno)).error();
            return false;
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fdatasync(fd_) != 0) {
        obs::event("batch_spool_sync_failed").str("error", std::strerror(errno)).error();
        return false;
    }
    book_.apply(line);
    return true;
}

}  // namespace bgw::net
