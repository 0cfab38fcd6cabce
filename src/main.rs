fn main() {
    println!("parity");
}
