use std::collections::BTreeMap;

/// What one archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File { data: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
    CharDevice { major: u32, minor: u32, mode: u32 },
}

/// An initramfs tree. Entries are kept sorted, so parents precede children and the same
/// tree always gives the same bytes: no timestamps, owners or inode numbers from the host.
#[derive(Clone, Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Node>,
}

impl Archive {
    /// Adds `node` at `path` (absolute or not), creating missing parent directories.
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = path.trim_matches('/');
        let mut parent = String::new();
        for part in path.split('/').take(path.split('/').count().saturating_sub(1)) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries.entry(parent.clone()).or_insert(Node::Dir { mode: 0o755 });
        }
        self.entries.insert(path.to_string(), node);
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_matches('/'))
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries.get(path.trim_matches('/'))
    }

    /// Every path, without its leading `/`, parents first.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The archive in the kernel's "newc" format.
    pub fn to_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, (path, node)) in self.entries.iter().enumerate() {
            let (mode, data, rdev) = match node {
                Node::File { data, mode } => (0o100000 | mode, data.as_slice(), (0, 0)),
                Node::Dir { mode } => (0o040000 | mode, &[][..], (0, 0)),
                Node::Symlink { target } => (0o120777, target.as_bytes(), (0, 0)),
                Node::CharDevice { major, minor, mode } => (0o020000 | mode, &[][..], (*major, *minor)),
            };
            let nlink = if matches!(node, Node::Dir { .. }) { 2 } else { 1 };
            append_entry(&mut out, index as u32 + 1, mode, nlink, rdev, path, data);
        }
        append_entry(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
        out
    }
}

fn append_entry(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, rdev: (u32, u32), name: &str, data: &[u8]) {
    let fields = [ino, mode, 0, 0, nlink, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first_and_output_is_stable() {
        let mut a = Archive::default();
        a.insert("/usr/sbin/tool", Node::File { data: b"x".to_vec(), mode: 0o755 });
        a.insert("/init", Node::File { data: b"y".to_vec(), mode: 0o755 });
        let mut b = Archive::default();
        b.insert("/init", Node::File { data: b"y".to_vec(), mode: 0o755 });
        b.insert("/usr/sbin/tool", Node::File { data: b"x".to_vec(), mode: 0o755 });
        assert_eq!(a.to_newc(), b.to_newc());
        assert_eq!(a.entries.keys().collect::<Vec<_>>(), ["init", "usr", "usr/sbin", "usr/sbin/tool"]);
        assert_eq!(a.to_newc().len() % 4, 0);
    }
}
