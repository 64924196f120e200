#pragma once
/// The batch tier's durable spool (issue 6): `{spool_dir}/journal.jsonl`, a journal of
/// bgw::batch::book events, each written and fsynced before the in-memory book applies it.

#include "bgw/batch/book.hpp"

#include <mutex>
#include <string>

namespace bgw::net {

class batch_spool {
public:
    /// Opens (creating it if needed) `{spool_dir}/journal.jsonl` and replays it; a torn last line
    /// from a crash is cut off. Throws std::runtime_error when the spool cannot be used.
    explicit batch_spool(const std::string& spool_dir);
    ~batch_spool();
    batch_spool(const batch_spool&) = delete;
    batch_spool& operator=(const batch_spool&) = delete;

    /// Guards the book and the journal: held around book() and append().
    std::mutex& mutex() { return mutex_; }
    /// The book as the journal says; the caller holds mutex().
    const batch::book& book() const { return book_; }
    /// Writes `line` + fdatasync, then applies it; false (logged, book unchanged) when the
    /// journal cannot be written. The caller holds mutex().
    bool append(const std::string& line);

private:
    std::mutex mutex_;
    batch::book book_;
    int fd_ = -1;
};

}  // namespace bgw::net
