//! What an exec or attach stream carries, whichever protocol frames it
//! (WebSocket: [`super::websocket`]; SPDY/3.1: [`super::spdy`]): bytes on
//! Kubernetes' numbered streams.

/// Stream numbers, as the WebSocket channel protocol numbers them.
pub mod channel {
    /// The command's input.
    pub const STDIN: u8 = 0;
    /// Its output.
    pub const STDOUT: u8 = 1;
    /// Its error output.
    pub const STDERR: u8 = 2;
    /// The command's Status, once it ended.
    pub const ERROR: u8 = 3;
    /// Terminal sizes, as JSON.
    pub const RESIZE: u8 = 4;
}

/// What a reader found in the bytes fed to it.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Bytes on stream `channel` (see [`channel`]; WebSocket v5 also uses
    /// 255 for `[255, N]`, closing stream N).
    Data {
        /// Which stream.
        channel: u8,
        /// The bytes (unmasked).
        bytes: Vec<u8>,
    },
    /// The connection is closing.
    Close,
}

/// Reads one direction of an exec stream as it passes: the bytes are
/// relayed untouched, the reader only tells the recorder what went by.
/// Frames are read once whole, so how the bytes are cut never changes what
/// is found.
pub trait ChannelReader {
    /// Why the bytes could not be read.
    type Error: std::fmt::Display;

    /// Bytes fed but not yet read (a frame not complete).
    fn buffer(&mut self) -> &mut Vec<u8>;

    /// Reads the frame at `at` in the buffer into `out`: how many bytes it
    /// took, `None` if it is not complete yet.
    fn frame(&mut self, at: usize, out: &mut Vec<Piece>) -> Result<Option<usize>, Self::Error>;

    /// Reads what `bytes` complete into `out`.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Piece>) -> Result<(), Self::Error> {
        self.buffer().extend_from_slice(bytes);
        let mut at = 0;
        while let Some(used) = self.frame(at, out)? {
            at += used;
        }
        self.buffer().drain(..at);
        Ok(())
    }
}
