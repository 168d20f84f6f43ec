//! Content codings: which ones a client accepts (`Accept-Encoding`) and the
//! precompressed siblings that stand for them on disk (`app.css.br`,
//! `.zst`, `.gz` beside `app.css`).
//!
//! The server's order of preference is br, zstd, gzip among the codings a
//! client accepts with a non-zero q-value, as nginx's `gzip_static` and
//! brotli modules choose. Opening the siblings is `lookup`'s job;
//! compressing on the fly is `compress`'s.

use http::HeaderValue;

/// A content coding tandem can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Zstd,
    Gzip,
}

impl Coding {
    /// Codings with precompressed siblings, most preferred first.
    pub const PRECOMPRESSED: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// The file-name suffix of a precompressed sibling.
    pub fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Zstd => ".zst",
            Coding::Gzip => ".gz",
        }
    }
}

/// The codings a client accepts, from its `Accept-Encoding`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    pub br: bool,
    pub zstd: bool,
    pub gzip: bool,
}

impl Accepted {
    pub fn from_header(value: Option<&HeaderValue>) -> Accepted {
        let Some(text) = value.and_then(|v| v.to_str().ok()) else {
            return Accepted::default();
        };
        let mut explicit: [Option<bool>; 3] = [None; 3];
        let mut star = None;
        for item in text.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let ok = q > 0.0;
            match token.as_str() {
                "br" => explicit[0] = Some(ok),
                "zstd" => explicit[1] = Some(ok),
                "gzip" | "x-gzip" => explicit[2] = Some(ok),
                "*" => star = Some(ok),
                _ => {}
            }
        }
        let star = star.unwrap_or(false);
        Accepted {
            br: explicit[0].unwrap_or(star),
            zstd: explicit[1].unwrap_or(star),
            gzip: explicit[2].unwrap_or(star),
        }
    }

    pub fn accepts(&self, coding: Coding) -> bool {
        match coding {
            Coding::Br => self.br,
            Coding::Zstd => self.zstd,
            Coding::Gzip => self.gzip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(s: &str) -> Accepted {
        Accepted::from_header(Some(&HeaderValue::from_str(s).unwrap()))
    }

    #[test]
    fn accept_encoding_forms() {
        let all = Accepted {
            br: true,
            zstd: true,
            gzip: true,
        };
        assert_eq!(Accepted::from_header(None), Accepted::default());
        assert_eq!(acc("gzip, deflate, br, zstd"), all);
        assert_eq!(
            acc("gzip"),
            Accepted {
                gzip: true,
                ..Default::default()
            }
        );
        assert_eq!(
            acc("x-gzip"),
            Accepted {
                gzip: true,
                ..Default::default()
            }
        );
        assert_eq!(
            acc("br;q=0, gzip;q=0.5"),
            Accepted {
                gzip: true,
                ..Default::default()
            }
        );
        assert_eq!(acc("*"), all);
        assert_eq!(
            acc("*;q=0.1, br;q=0"),
            Accepted {
                zstd: true,
                gzip: true,
                ..Default::default()
            }
        );
        assert_eq!(acc("identity"), Accepted::default());
        assert_eq!(
            acc("GZIP ; q=1.0"),
            Accepted {
                gzip: true,
                ..Default::default()
            }
        );
        assert_eq!(acc("gzip;q=0.000"), Accepted::default());
    }

    #[test]
    fn preference_and_names() {
        let order: Vec<_> = Coding::PRECOMPRESSED.iter().map(|c| (c.token(), c.suffix())).collect();
        assert_eq!(order, [("br", ".br"), ("zstd", ".zst"), ("gzip", ".gz")]);
    }
}
