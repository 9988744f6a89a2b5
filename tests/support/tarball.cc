#include "tests/support/tarball.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace lockstep::testing {
namespace {

// A fixed time keeps archives reproducible and lets tests check that times are restored.
constexpr time_t kEntryMtime = 1'700'000'000;
constexpr size_t kZeroChunk = 1 << 20;

struct WriteArchiveFree {
  void operator()(struct archive* a) const { archive_write_free(a); }
};
struct EntryFree {
  void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};

std::string ArchiveError(struct archive* a) {
  const char* message = archive_error_string(a);
  return message != nullptr ? message : "unknown libarchive error";
}

la_ssize_t AppendToString(struct archive*, void* client_data, const void* buffer, size_t length) {
  static_cast<std::string*>(client_data)->append(static_cast<const char*>(buffer), length);
  return static_cast<la_ssize_t>(length);
}

Status WriteData(struct archive* a, const TarEntry& e, const char* data, size_t size) {
  if (archive_write_data(a, data, size) != static_cast<la_ssize_t>(size)) {
    return Internal("tarball entry " + e.path + ": " + ArchiveError(a));
  }
  return Status::Ok();
}

Status WriteEntry(struct archive* a, const TarEntry& e) {
  std::unique_ptr<struct archive_entry, EntryFree> entry(archive_entry_new());
  // copy_pathname stores the bytes as given: libarchive's writers do not sanitise names
  // (bsdtar does that above them), which is what lets us build hostile archives.
  archive_entry_copy_pathname(entry.get(), e.path.c_str());
  archive_entry_set_mtime(entry.get(), kEntryMtime, 0);
  int mode = e.mode;
  int64_t size = 0;
  switch (e.type) {
    case TarEntry::Type::kFile:
      archive_entry_set_filetype(entry.get(), AE_IFREG);
      size = e.sparse_size >= 0 ? e.sparse_size : static_cast<int64_t>(e.contents.size());
      break;
    case TarEntry::Type::kDir:
      archive_entry_set_filetype(entry.get(), AE_IFDIR);
      // TarEntry's default mode is meant for files; a directory nobody can enter is never
      // what a test that left the mode alone wanted.
      if (mode == 0644) mode = 0755;
      break;
    case TarEntry::Type::kSymlink:
      archive_entry_set_filetype(entry.get(), AE_IFLNK);
      archive_entry_copy_symlink(entry.get(), e.target.c_str());
      mode = 0777;
      break;
    case TarEntry::Type::kHardlink:
      archive_entry_set_filetype(entry.get(), AE_IFREG);
      archive_entry_copy_hardlink(entry.get(), e.target.c_str());
      break;
    case TarEntry::Type::kCharDevice:
      archive_entry_set_filetype(entry.get(), AE_IFCHR);
      archive_entry_set_rdevmajor(entry.get(), 1);  // 1:3 is /dev/null
      archive_entry_set_rdevminor(entry.get(), 3);
      break;
    case TarEntry::Type::kFifo:
      archive_entry_set_filetype(entry.get(), AE_IFIFO);
      break;
  }
  archive_entry_set_perm(entry.get(), static_cast<mode_t>(mode));
  archive_entry_set_size(entry.get(), size);
  // ARCHIVE_WARN is what a non-ASCII name gets in the C locale: libarchive cannot convert it
  // to UTF-8 and stores the bytes verbatim (hdrcharset=BINARY), which is what we want. Setting
  // the UTF-8 form as well instead crashes libarchive 3.6.2's pax writer.
  if (archive_write_header(a, entry.get()) < ARCHIVE_WARN) {
    return Internal("tarball entry " + e.path + ": " + ArchiveError(a));
  }
  if (e.type == TarEntry::Type::kFile) {
    if (e.sparse_size >= 0) {
      const std::string zeros(kZeroChunk, '\0');
      for (int64_t left = e.sparse_size; left > 0;) {
        size_t n = static_cast<size_t>(std::min<int64_t>(left, kZeroChunk));
        LOCKSTEP_RETURN_IF_ERROR(WriteData(a, e, zeros.data(), n));
        left -= static_cast<int64_t>(n);
      }
    } else if (!e.contents.empty()) {
      LOCKSTEP_RETURN_IF_ERROR(WriteData(a, e, e.contents.data(), e.contents.size()));
    }
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::string> TarGzBytes(const std::vector<TarEntry>& entries) {
  std::string bytes;
  std::unique_ptr<struct archive, WriteArchiveFree> a(archive_write_new());
  if (!a) return Internal("tarball: libarchive could not allocate a writer");
  // Without this libarchive pads the compressed stream with zeros to a 10 KiB block, which no
  // real gzip artifact has and which would hide truncation and corruption in tests.
  archive_write_set_bytes_in_last_block(a.get(), 1);
  if (archive_write_add_filter_gzip(a.get()) != ARCHIVE_OK ||
      archive_write_set_format_pax_restricted(a.get()) != ARCHIVE_OK ||
      archive_write_open(a.get(), &bytes, nullptr, AppendToString, nullptr) != ARCHIVE_OK) {
    return Internal("tarball: " + ArchiveError(a.get()));
  }
  for (const TarEntry& e : entries) LOCKSTEP_RETURN_IF_ERROR(WriteEntry(a.get(), e));
  // Close flushes the gzip trailer into `bytes`; free would do it too but hide errors.
  if (archive_write_close(a.get()) != ARCHIVE_OK) {
    return Internal("tarball: " + ArchiveError(a.get()));
  }
  return bytes;
}

Status WriteTarGz(const std::string& path, const std::vector<TarEntry>& entries) {
  StatusOr<std::string> bytes = TarGzBytes(entries);
  if (!bytes.ok()) return bytes.status();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
  out.close();
  if (!out) return Internal("tarball: cannot write " + path);
  return Status::Ok();
}

TarEntry Script(const std::string& path, const std::string& body) {
  TarEntry e;
  e.type = TarEntry::Type::kFile;
  e.path = path;
  e.contents = "#!/bin/sh\n" + body;
  e.mode = 0755;
  return e;
}

}  // namespace lockstep::testing
